# Domain adapters (opt-in): a domain named in adapters.datasets gets a LoRA adapter trained on its
# dataset TSV and merged into a CTranslate2 model. See config/README.md ("adapters").


rule train_adapter:
    input:
        dataset=adapter_dataset,
        audio=adapter_audio,
    output:
        adapter=directory("resources/adapters/{domain}/lora"),
        metrics="resources/adapters/{domain}/metrics.json",
    params:
        settings=adapter_settings,
    log:
        "logs/train_adapter/{domain}.log",
    benchmark:
        "benchmarks/train_adapter/{domain}.tsv"
    threads: config["adapters"]["threads"]
    resources:
        mem_mb=config["resources"]["train_adapter_mem_mb"],
        runtime=runtime_min("train_adapter"),
    run:
        # Its own process: training imports torch and transformers, which must not stay resident in
        # the Snakemake process (the model server does not train).
        run_model_job(
            log[0],
            "trax.asr.adapters:train_adapter",
            server=None,
            dataset=input.dataset,
            adapter_dir=output.adapter,
            metrics_path=output.metrics,
            domain=wildcards.domain,
            settings=params.settings,
        )


rule build_adapted_model:
    input:
        adapter="resources/adapters/{domain}/lora",
    output:
        model=directory("resources/adapters/{domain}/ct2"),
    params:
        settings=adapted_model_settings,
    log:
        "logs/build_adapted_model/{domain}.log",
    benchmark:
        "benchmarks/build_adapted_model/{domain}.tsv"
    threads: config["adapters"]["threads"]
    resources:
        mem_mb=config["resources"]["build_adapted_model_mem_mb"],
        runtime=runtime_min("build_adapted_model"),
    run:
        run_model_job(
            log[0],
            "trax.asr.adapters:build_adapted_model",
            server=None,
            adapter_dir=input.adapter,
            output_dir=output.model,
            settings=params.settings,
        )

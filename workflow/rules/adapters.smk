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
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/train_adapter.py"


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
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/build_adapted_model.py"

rule refine:
    input:
        fast="results/{sample}/transcript.fast.json",
        wav="results/{sample}/audio.wav",
        adapters=refine_adapters,
    output:
        transcript="results/{sample}/transcript.refined.json",
    params:
        settings=config["refine"],
        domains=DOMAINS,
        sample_domain=sample_domain,
    log:
        "logs/refine/{sample}.log",
    benchmark:
        "benchmarks/refine/{sample}.tsv"
    threads: model_threads(config["refine"]["cpu_threads"])
    resources:
        mem_mb=config["resources"]["refine_mem_mb"],
        runtime=audio_runtime_min("refine"),
    run:
        run_model_job(
            log[0],
            "trax.refine:refine_file",
            in_process=SERVER.enabled or not params.settings["enabled"],
            wav_path=input.wav,
            fast_path=input.fast,
            output_path=output.transcript,
            settings=params.settings,
            domains=params.domains,
            sample_domain=params.sample_domain,
        )

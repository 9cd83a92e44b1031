rule enhance:
    input:
        merged="results/{sample}/merged.json",
    output:
        json="results/{sample}/enhanced.json",
        md="results/{sample}/enhanced.md",
    params:
        settings=enhance_settings(),
    log:
        "logs/enhance/{sample}.log",
    benchmark:
        "benchmarks/enhance/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["enhance_mem_mb"],
        runtime=runtime_min("enhance"),
    run:
        run_job(
            log[0],
            "trax.transcript.enhance:enhance_files",
            merged_path=input.merged,
            json_path=output.json,
            md_path=output.md,
            settings=params.settings,
        )

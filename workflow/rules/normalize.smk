rule normalize:
    input:
        source=source_file,
    output:
        wav="results/{sample}/audio.wav",
        info="results/{sample}/audio.json",
    params:
        source=source_path,
        settings=config["normalize"],
    log:
        "logs/normalize/{sample}.log",
    benchmark:
        "benchmarks/normalize/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["normalize_mem_mb"],
        runtime=runtime_min("normalize"),
    run:
        run_job(
            log[0],
            "trax.io.media:normalize",
            source=params.source,
            wav_path=output.wav,
            info_path=output.info,
            sample_id=wildcards.sample,
            options=NormalizeOptions(**params.settings),
        )

rule merge:
    input:
        unpack(merge_inputs),
    output:
        merged="results/{sample}/merged.json",
    params:
        settings=config["merge"],
        speaker_names=speaker_names,
        quality=config["quality"],
        speakers=IDENTIFY_SETTINGS,
    log:
        "logs/merge/{sample}.log",
    benchmark:
        "benchmarks/merge/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["merge_mem_mb"],
        runtime=runtime_min("merge"),
    run:
        run_job(log[0], "trax.transcript.merge:merge_files", **merge_arguments(input, output, params))

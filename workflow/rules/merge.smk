rule merge:
    input:
        unpack(merge_inputs),
    output:
        merged="results/{sample}/merged.json",
    params:
        settings=config["merge"],
        speaker_names=speaker_names,
    log:
        "logs/merge/{sample}.log",
    benchmark:
        "benchmarks/merge/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["merge_mem_mb"],
        runtime=runtime_min("merge"),
    run:
        run_job(
            log[0],
            "trax.merge:merge_files",
            transcript_path=input.transcript,
            rttm_path=input.get("rttm"),
            output_path=output.merged,
            settings=params.settings,
            speaker_names=params.speaker_names,
        )

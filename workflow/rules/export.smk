rule export:
    input:
        merged="results/{sample}/merged.json",
    output:
        srt="results/{sample}/transcript.srt",
        vtt="results/{sample}/transcript.vtt",
        txt="results/{sample}/transcript.txt",
        md="results/{sample}/transcript.md",
    params:
        settings=config["export"],
    log:
        "logs/export/{sample}.log",
    benchmark:
        "benchmarks/export/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["export_mem_mb"],
        runtime=runtime_min("export"),
    run:
        run_job(
            log[0],
            "trax.transcript.exports:export_files",
            merged_path=input.merged,
            outputs={"srt": output.srt, "vtt": output.vtt, "txt": output.txt, "md": output.md},
            settings=params.settings,
        )

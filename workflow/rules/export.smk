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
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/export.py"

rule merge:
    input:
        transcript="results/{sample}/transcript.refined.json",
        rttm="results/{sample}/diarization.rttm",
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
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/merge.py"

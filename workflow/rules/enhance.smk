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
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/enhance.py"

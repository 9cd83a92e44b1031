# Evaluation against references, run metrics, report figures and the cross-file summary.


rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        evaluation="results/{sample}/evaluation.json",
    params:
        settings=config["evaluate"],
        references=evaluate_references,
        transcripts=list(TRANSCRIPTS),
    log:
        "logs/evaluate/{sample}.log",
    benchmark:
        "benchmarks/evaluate/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["report_mem_mb"],
        runtime=runtime_min("report"),
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/evaluate.py"


rule metrics:
    input:
        unpack(metrics_inputs),
    output:
        metrics="results/{sample}/metrics.json",
    params:
        stages=STAGES,
    log:
        "logs/metrics/{sample}.log",
    benchmark:
        "benchmarks/metrics/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["report_mem_mb"],
        runtime=runtime_min("report"),
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/metrics.py"


rule figures:
    input:
        unpack(figure_inputs),
    output:
        timeline=report(
            "results/{sample}/report/timeline.png",
            caption="../report/timeline.rst",
            category="Recordings",
            subcategory="{sample}",
            labels={"recording": "{sample}", "figure": "speaker timeline"},
        ),
        confidence=report(
            "results/{sample}/report/confidence.png",
            caption="../report/confidence.rst",
            category="Recordings",
            subcategory="{sample}",
            labels={"recording": "{sample}", "figure": "word confidence"},
        ),
        preview=report(
            "results/{sample}/report/preview.html",
            caption="../report/preview.rst",
            category="Recordings",
            subcategory="{sample}",
            labels={"recording": "{sample}", "figure": "transcript preview"},
        ),
    params:
        preview_segments=config["report"]["preview_segments"],
    log:
        "logs/figures/{sample}.log",
    benchmark:
        "benchmarks/figures/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["report_mem_mb"],
        runtime=runtime_min("report"),
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/figures.py"


rule summary:
    input:
        unpack(summary_inputs),
    output:
        summary="results/summary.tsv",
        aggregate="results/aggregate.tsv",
        targets="results/targets.tsv",
        evaluation="results/evaluation.tsv",
        html=report(
            "results/report/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "summary, targets, evaluation"},
        ),
    params:
        targets=config["report"]["targets"],
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["report_mem_mb"],
        runtime=runtime_min("report"),
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/summary.py"

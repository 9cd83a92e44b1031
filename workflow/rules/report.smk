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
    run:
        run_job(
            log[0],
            "trax.quality.evaluation:evaluate_file",
            sample_id=wildcards.sample,
            transcripts={name: input[f"transcript_{name}"] for name in params.transcripts},
            output_path=output.evaluation,
            settings=params.settings,
            hypothesis_rttm=input.get("hypothesis_rttm"),
            merged=input.merged,
            **params.references,
        )


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
    run:
        run_job(
            log[0],
            "trax.report.metrics:write_file_metrics",
            sample_id=wildcards.sample,
            inputs=dict(input.items()),
            stages=params.stages,
            output_path=output.metrics,
            server=server_stats(SERVER),
        )


rule figures:
    input:
        unpack(figure_inputs),
    output:
        timeline=report(
            "results/{sample}/report/timeline.svg",
            caption="../report/timeline.rst",
            category="Recordings",
            subcategory="{sample}",
            labels={"recording": "{sample}", "figure": "speaker timeline"},
        ),
        confidence=report(
            "results/{sample}/report/confidence.svg",
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
    run:
        run_job(
            log[0],
            "trax.report.figures:make_figures",
            sample_id=wildcards.sample,
            transcript_json=input.transcript,
            audio_json=input.audio,
            rttm=input.get("rttm"),
            timeline=output.timeline,
            confidence=output.confidence,
            preview=output.preview,
            max_segments=params.preview_segments,
        )


rule summary:
    input:
        unpack(summary_inputs),
    output:
        summary="results/summary.tsv",
        aggregate="results/aggregate.tsv",
        targets="results/targets.tsv",
        evaluation="results/evaluation.tsv",
        review="results/review.tsv",
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
    run:
        run_job(
            log[0],
            "trax.report.metrics:write_summary",
            metrics_paths=list(input.metrics),
            evaluation_paths=list(input.evaluations),
            targets=params.targets,
            outputs=dict(output.items()),
        )

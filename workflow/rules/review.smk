# The review page (listen, check, correct) and the corrections it saves, fed back into the outputs.


rule review_audio:
    input:
        wav="results/{sample}/audio.wav",
    output:
        audio="results/{sample}/review.webm",
    params:
        settings={key: config["review"][key] for key in ("audio_bitrate_kbps", "audio_compression_level")},
    log:
        "logs/review_audio/{sample}.log",
    benchmark:
        "benchmarks/review_audio/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["export_mem_mb"],
        runtime=audio_runtime_min("export"),
    run:
        run_job(log[0], "trax.transcript.review:encode_audio", wav_path=input.wav, output_path=output.audio,
                settings=params.settings)


rule review:
    input:
        unpack(review_inputs),
    output:
        html=report(
            "results/{sample}/review.html",
            caption="../report/review.rst",
            category="Recordings",
            subcategory="{sample}",
            labels={"recording": "{sample}", "figure": "review page"},
        ),
    params:
        settings=config["review"],
    log:
        "logs/review/{sample}.log",
    benchmark:
        "benchmarks/review/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["export_mem_mb"],
        runtime=runtime_min("export"),
    run:
        run_job(
            log[0],
            "trax.transcript.review:write_review_page",
            merged_path=input.merged,
            output_path=output.html,
            audio_path=input.audio,
            settings=params.settings,
            corrected_path=input.get("corrected"),
            corrections_path=input.get("corrections"),
        )


rule correct:
    input:
        merged="results/{sample}/merged.json",
        corrections=corrections_file,
    output:
        merged="results/{sample}/merged.corrected.json",
        srt="results/{sample}/transcript.corrected.srt",
        vtt="results/{sample}/transcript.corrected.vtt",
        txt="results/{sample}/transcript.corrected.txt",
        md="results/{sample}/transcript.corrected.md",
    params:
        settings=config["export"],
    log:
        "logs/correct/{sample}.log",
    benchmark:
        "benchmarks/correct/{sample}.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["export_mem_mb"],
        runtime=runtime_min("export"),
    run:
        run_job(
            log[0],
            "trax.transcript.corrections:correct_files",
            merged_path=input.merged,
            corrections_path=input.corrections,
            output_path=output.merged,
            exports={"srt": output.srt, "vtt": output.vtt, "txt": output.txt, "md": output.md},
            export_settings=params.settings,
        )

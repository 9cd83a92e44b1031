rule transcribe_fast:
    input:
        wav="results/{sample}/audio.wav",
    output:
        transcript="results/{sample}/transcript.fast.json",
    params:
        settings=transcribe_fast_settings,
    log:
        "logs/transcribe_fast/{sample}.log",
    benchmark:
        "benchmarks/transcribe_fast/{sample}.tsv"
    threads: model_threads(config["transcribe_fast"]["cpu_threads"])
    resources:
        mem_mb=config["resources"]["transcribe_fast_mem_mb"],
        runtime=audio_runtime_min("transcribe_fast"),
    run:
        run_model_job(
            log[0],
            "trax.asr.transcribe:transcribe_file",
            server=SERVER,
            wav_path=input.wav,
            output_path=output.transcript,
            sample_id=wildcards.sample,
            settings=params.settings,
        )

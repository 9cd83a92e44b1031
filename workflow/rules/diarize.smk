rule diarize:
    input:
        wav="results/{sample}/audio.wav",
    output:
        rttm="results/{sample}/diarization.rttm",
        json="results/{sample}/diarization.json",
    params:
        settings=diarize_settings,
    log:
        "logs/diarize/{sample}.log",
    benchmark:
        "benchmarks/diarize/{sample}.tsv"
    threads: model_threads(config["diarize"]["threads"])
    resources:
        mem_mb=config["resources"]["diarize_mem_mb"],
        runtime=audio_runtime_min("diarize"),
    run:
        run_model_job(
            log[0],
            "trax.diarization.pipeline:diarize_file",
            server=SERVER,
            wav_path=input.wav,
            rttm_path=output.rttm,
            json_path=output.json,
            sample_id=wildcards.sample,
            settings=params.settings,
        )

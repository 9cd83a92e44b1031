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
    conda:
        "../../envs/trax.yaml"
    script:
        "../../scripts/diarize.py"

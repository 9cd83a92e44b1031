# Speaker profiles (opt-in, speakers.profiles) and linking across recordings. See config/README.md
# ("speakers") and trax.diarization.speakers. Identification itself happens in merge (it needs the store).


rule enroll_speakers:
    input:
        table=enrollment_table,
        audio=enrollment_audio,
    output:
        store=PROFILE_STORE,
    params:
        settings=enroll_settings(),
        speakers=enroll_speaker_settings(),
    log:
        "logs/enroll_speakers/profiles.log",
    benchmark:
        "benchmarks/enroll_speakers/profiles.tsv"
    threads: config["diarize"]["threads"]
    resources:
        mem_mb=config["resources"]["enroll_speakers_mem_mb"],
        runtime=runtime_min("enroll_speakers"),
    run:
        run_model_job(
            log[0],
            "trax.diarization.speakers:enroll_file",
            server=enroll_server(),
            table_path=input.table,
            store_path=output.store,
            settings=params.settings,
            speakers=params.speakers,
        )


rule link_speakers:
    input:
        unpack(link_inputs),
    output:
        tsv="results/speakers.tsv",
    params:
        settings=link_settings(),
    log:
        "logs/link_speakers/speakers.log",
    benchmark:
        "benchmarks/link_speakers/speakers.tsv"
    threads: 1
    resources:
        mem_mb=config["resources"]["link_speakers_mem_mb"],
        runtime=runtime_min("link_speakers"),
    run:
        run_job(
            log[0],
            "trax.diarization.speakers:link_files",
            subject="speakers",
            diarizations=list(input.diarizations),
            output_path=output.tsv,
            settings=params.settings,
            store_path=input.get("store"),
        )

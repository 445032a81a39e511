"""Tools around the pipeline: synthetic exports (:mod:`.synth`), the OpenAI exporter
(:mod:`.openai_export`) and the recall demo (:mod:`.demo_recall`)."""

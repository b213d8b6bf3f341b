"""Fine-tuning jobs: the OpenAI Files and Fine-tuning jobs API underneath (store, worker, files, model registry)."""

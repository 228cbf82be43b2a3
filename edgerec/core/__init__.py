"""The machinery every stage stands on: data sets and their files (`datasets`, `files`), the
models and their training loop (`models`, `training`, `graphs`, `incremental`), metrics, target
profiles (`targets`), artifacts and their manifests (`artifacts`), the console and errors."""

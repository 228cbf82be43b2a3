"""The machinery every stage stands on, knowing no model format: data sets and their files
(`datasets`, `interactions`, `files`), the models (`models`, `model_surgery`, `text_input`,
`text_teacher`) and the torch graphs that are exported (`graphs`), training (`batches`,
`training`, `distillation`, `soft_targets`), evaluation and metrics (`evaluation`, `metrics`),
target profiles and their budgets (`targets`, `budgets`), artifacts and bundles (`artifacts`,
`bundle`), the report, the console and errors."""

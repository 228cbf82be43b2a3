"""The pipeline's stages, one module each, in the order a build runs them: `data` (interactions
to splits), `teacher` (train or import the big model), `distill`, `prune`, `export`, `quantize`,
`validate`, and `build` (all of them); `recommend` reads what they wrote. A stage reads its
inputs' artifacts and writes its own; what two stages share lives below them, in `edgerec.core`,
`edgerec.formats` and `edgerec.devices`. Only `build` calls other stages."""

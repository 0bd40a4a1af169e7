"""Templates of `cuberun create`: `single` (one task) and `pipeline` (train, then evaluate).

Files are copied with `{{key}}` placeholders filled (see cuberun.scaffold); `*.tmpl` and
`dockerignore` are renamed on the way."""

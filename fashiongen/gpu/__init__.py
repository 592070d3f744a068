"""The one-call GPU kit (docs/gpu.md): `python -m fashiongen.gpu prepare|restore|run|unpack`.

prepare (here) builds what a lent GPU machine needs in an ignored folder (.gpu/: photos at the model resolution,
the caption encoder cut to our captions' tokens, the wheels it lacks) and stages out of the checkout what the call
does not need, so that under 60 MiB travels; run (there) tests, measures and trains in one call and returns the
weights in pieces; restore and unpack (here) put the checkout back and turn the pieces into a model folder.
Modules: travel (what travels, staging), photos, encoder, prepare, feed (resident batches), bench, run, pieces,
unpack.
"""

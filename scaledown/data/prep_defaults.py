# The models `scaledown prepare-data` uses unless told otherwise (OSCAR section 4.1); no torch, so the command line
# can show them in --help and check flags before any model code loads.
DEFAULT_SPLADE = "naver/splade-v3"                                  # first-stage retriever
DEFAULT_RERANKER = "naver/trecdl22-crossencoder-debertav3"          # cross-encoder whose scores are distilled
DEFAULT_TEACHER = "mistralai/Mistral-7B-Instruct-v0.2"              # the LLM whose answers are distilled

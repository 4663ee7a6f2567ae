# Prompt text shared by the config's defaults and the offline tiny tokenizer's training corpus (a leaf module).
OSCAR_SYSTEM_PROMPT = (
    "You are a helpful assistant. Your task is to extract relevant information from provided "
    "documents and to answer questions as briefly as possible."
)

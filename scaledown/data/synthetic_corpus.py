# The seed's `python -m scaledown.data.synthetic_corpus`: a shim. The writer is data/synthetic_corpus_files.py (kept
# importable from here); the command line is cli/synthetic_corpus.py, which imports the writer, not this module (no
# import circle through the shim).
from scaledown.data.synthetic_corpus_files import SyntheticCorpus, write_synthetic_corpus  # noqa: F401

if __name__ == "__main__":
    from scaledown.cli.synthetic_corpus import main
    main()

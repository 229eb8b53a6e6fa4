"""The kNN-LM datastore (Khandelwal et al. 2020): keys, storage, search, sync with the knowledge
store, the math, and perplexity evaluation. Used by the ``knn-lm`` answer mode."""

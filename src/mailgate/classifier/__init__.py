"""The routing classifier (issue 17): a model trained on a tenant's own labels, stored as data.

``features`` turns a message into TF-IDF word and character n-grams; ``model`` is the stored
format (plain JSON: vocabulary, idf, coefficients, calibration) and prediction with numpy
only; ``train`` fits it with scikit-learn and scores it (``evaluate``). The pipeline's
``classify`` stage asks a `model.LinearModel` for a queue; nothing here knows about stages,
stores or configs, so the CLI, the bench and the tests use the same code.
"""

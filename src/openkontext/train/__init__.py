"""Training the embedded `mini` model on Shapes World (autoencoder, then transformer)."""

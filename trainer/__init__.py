"""lipsweep's trainer: config, text, data, augment, model, search, train loop, tracking."""

"""Published weights: finding them on the hub or on disk (hub), the key maps from every published layout to ours
(keymap), the catalogue of known checkpoints (checkpoints), and saving ours in transformers' layout (save)."""

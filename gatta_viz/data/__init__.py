"""Data: datasets held in memory (``datasets``: Fashion-MNIST offline, CIFAR, ImageFolder) and image decoding
and preprocessing for uploads and files (``preprocess``)."""

"""Image captioning: a pretrained CNN encoder and a recurrent decoder, trained with PyTorch Lightning."""

__version__ = "0.1.0"

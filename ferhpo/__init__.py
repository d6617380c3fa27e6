"""ferhpo: reproduce a FER2013 DenseNet/ResNet study, then beat it with search."""

__version__ = "0.1.0"

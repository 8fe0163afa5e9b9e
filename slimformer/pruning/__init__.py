"""slimformer.pruning"""

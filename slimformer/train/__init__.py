"""slimformer.train"""

"""slimformer.search"""

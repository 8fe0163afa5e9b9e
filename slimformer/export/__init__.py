"""slimformer.export"""

"""slimformer.latency_lut"""

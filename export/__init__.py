"""latentwatch.export"""

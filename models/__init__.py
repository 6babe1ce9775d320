"""latentwatch.models"""

"""latentwatch.service"""

"""Reports of findings: text, JSON and self-contained HTML (layer 3, beside metrics).

May import guard and tracker; never integrations, fleet, replay or cli.
"""

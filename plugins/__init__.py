"""zoo's built-in plugins, one module per architecture (installed as `zoo.plugins`).

They are registered in zoo's own pyproject.toml under the `zoo.plugins` entry-point
group, exactly as a third-party package registers its plugins.
"""

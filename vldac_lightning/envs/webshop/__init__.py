"""WebShop (docs/environments.md#webshop): a local web store seen through headless Chromium."""

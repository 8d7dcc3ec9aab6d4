"""GrocerySync hub: the multi-tenant web app technicians run their stores from."""

__version__ = "0.1.0"

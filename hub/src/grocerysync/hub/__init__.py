"""GrocerySync hub: the multi-tenant web app technicians run their stores from."""

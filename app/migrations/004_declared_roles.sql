-- Roles are declared by the kernel and the modules (`Module(roles=...)`) and checked by the service
-- when granted: a new module's role needs no kernel migration.
ALTER TABLE role_grant DROP CONSTRAINT role_grant_role_check;

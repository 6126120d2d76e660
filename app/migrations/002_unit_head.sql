-- The head of a unit (chủ tịch UBND phường, giám đốc sở): overdue feedback escalates to them.
ALTER TABLE role_grant DROP CONSTRAINT role_grant_role_check;
ALTER TABLE role_grant ADD CONSTRAINT role_grant_role_check
    CHECK (role IN ('staff', 'unit_head', 'transit_operator', 'health_facility', 'parking_operator', 'admin'));

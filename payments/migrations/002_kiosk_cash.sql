-- Cash taken at an operator's kiosk (a paper ticket sold for cash) enters the ledger as a cash_sale:
-- cash -X / operator +X, no fee. The cash account's balance is minus all the cash kiosks took, the way
-- clearing's is minus the money the gateway brought; the operator's balance holds the cash it took until it
-- is remitted to the treasury, like its wallet charges. Only additions: no existing row changes meaning.

ALTER TABLE payment_account DROP CONSTRAINT payment_account_kind_check;
ALTER TABLE payment_account ADD CONSTRAINT payment_account_kind_check
    CHECK (kind IN ('wallet', 'operator', 'clearing', 'fees', 'treasury', 'cash'));
DROP INDEX payment_account_house_idx;
CREATE UNIQUE INDEX payment_account_house_idx ON payment_account (kind)
    WHERE kind IN ('clearing', 'fees', 'treasury', 'cash');
INSERT INTO payment_account (id, kind) VALUES (4, 'cash');

ALTER TABLE payment_transaction DROP CONSTRAINT payment_transaction_kind_check;
ALTER TABLE payment_transaction ADD CONSTRAINT payment_transaction_kind_check
    CHECK (kind IN ('topup', 'charge', 'refund', 'remittance', 'cash_sale'));

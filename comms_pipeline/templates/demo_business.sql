-- A small business database for the demo: accounts receivable, subscriptions, bills,
-- payments, wallets and service requests of contacts C-1001 .. C-1006.
-- Portable SQL: runs unchanged on SQLite and PostgreSQL (comms_pipeline.entity_sources.
-- load_demo_business executes it statement by statement). Re-running it starts afresh.

DROP TABLE IF EXISTS payments;
DROP TABLE IF EXISTS bills;
DROP TABLE IF EXISTS subscriptions;
DROP TABLE IF EXISTS wallets;
DROP TABLE IF EXISTS service_requests;
DROP TABLE IF EXISTS accounts_receivable;

CREATE TABLE accounts_receivable (
    id                 INTEGER PRIMARY KEY,
    number             VARCHAR(32) NOT NULL UNIQUE,
    contact_ref        VARCHAR(64) NOT NULL,
    name               VARCHAR(200) NOT NULL,
    balance            NUMERIC(12, 2) NOT NULL,
    outstanding_amount NUMERIC(12, 2) NOT NULL,
    currency           CHAR(3) NOT NULL,
    state              VARCHAR(16) NOT NULL
);

CREATE TABLE wallets (
    id                         INTEGER PRIMARY KEY,
    number                     VARCHAR(32) NOT NULL UNIQUE,
    accounts_receivable_id     INTEGER NOT NULL REFERENCES accounts_receivable (id),
    balance                    NUMERIC(12, 2) NOT NULL,
    available_amount           NUMERIC(12, 2) NOT NULL,
    currency                   CHAR(3) NOT NULL,
    estimated_consumption_date DATE,
    low_balance_threshold      NUMERIC(12, 2) NOT NULL
);

CREATE TABLE subscriptions (
    id                     INTEGER PRIMARY KEY,
    number                 VARCHAR(32) NOT NULL UNIQUE,
    accounts_receivable_id INTEGER NOT NULL REFERENCES accounts_receivable (id),
    type                   VARCHAR(64) NOT NULL,
    state                  VARCHAR(16) NOT NULL,
    services               VARCHAR(400) NOT NULL,
    installed_items        VARCHAR(400) NOT NULL,
    activated_on           DATE
);

CREATE TABLE bills (
    id                      INTEGER PRIMARY KEY,
    number                  VARCHAR(32) NOT NULL UNIQUE,
    accounts_receivable_id  INTEGER NOT NULL REFERENCES accounts_receivable (id),
    period                  VARCHAR(32) NOT NULL,
    issued_on               DATE NOT NULL,
    due_date                DATE NOT NULL,
    total_amount            NUMERIC(12, 2) NOT NULL,
    total_amount_to_be_paid NUMERIC(12, 2) NOT NULL,
    currency                CHAR(3) NOT NULL
);

CREATE TABLE payments (
    id                     INTEGER PRIMARY KEY,
    number                 VARCHAR(32) NOT NULL UNIQUE,
    accounts_receivable_id INTEGER NOT NULL REFERENCES accounts_receivable (id),
    amount                 NUMERIC(12, 2) NOT NULL,
    currency               CHAR(3) NOT NULL,
    posted_on              DATE NOT NULL,
    method                 VARCHAR(32) NOT NULL
);

CREATE TABLE service_requests (
    id                   INTEGER PRIMARY KEY,
    number               VARCHAR(32) NOT NULL UNIQUE,
    contact_ref          VARCHAR(64) NOT NULL,
    type                 VARCHAR(64) NOT NULL,
    status               VARCHAR(32) NOT NULL,
    response_description VARCHAR(1000),
    responded_by         VARCHAR(200),
    response_date        DATE
);

INSERT INTO accounts_receivable (id, number, contact_ref, name, balance, outstanding_amount, currency, state) VALUES
    (1, 'AR-1001', 'C-1001', 'Maria Georgiou', -42.50, 0.00, 'EUR', 'active'),
    (2, 'AR-1002', 'C-1002', 'Andreas Christodoulou', 118.20, 118.20, 'EUR', 'active'),
    (3, 'AR-1003', 'C-1003', 'Eleni Constantinou', 0.00, 0.00, 'EUR', 'active'),
    (4, 'AR-1004', 'C-1004', 'John Smith', 64.90, 64.90, 'EUR', 'active'),
    (5, 'AR-1005', 'C-1005', 'Sofia Ioannou', 250.00, 190.00, 'EUR', 'suspended'),
    (6, 'AR-1006', 'C-1006', 'Chloe Martin', 15.00, 0.00, 'EUR', 'active');

INSERT INTO wallets (id, number, accounts_receivable_id, balance, available_amount, currency, estimated_consumption_date, low_balance_threshold) VALUES
    (1, 'W-1001', 1, 25.00, 25.00, 'EUR', '2024-11-30', 5.00),
    (2, 'W-1003', 3, 3.40, 3.40, 'EUR', '2024-10-12', 5.00),
    (3, 'W-1006', 6, 1.10, 1.10, 'EUR', '2024-10-08', 5.00);

INSERT INTO subscriptions (id, number, accounts_receivable_id, type, state, services, installed_items, activated_on) VALUES
    (1, 'S-1001', 1, 'Residential', 'active', 'TV Basic, Sports Plus', 'Set-top box HD-200', '2024-09-01'),
    (2, 'S-1002', 2, 'Residential', 'active', 'TV Premium, Cinema', 'Set-top box 4K-500, Smart card', '2023-03-15'),
    (3, 'S-1003', 3, 'Prepaid', 'active', 'TV Basic', 'Set-top box HD-200', '2024-10-01'),
    (4, 'S-1004', 4, 'Business', 'active', 'Fibre 500, Static IP', 'Router FX-9', '2022-11-20'),
    (5, 'S-1005', 5, 'Residential', 'suspended', 'TV Premium', 'Set-top box 4K-500', '2021-06-01'),
    (6, 'S-1006', 6, 'Prepaid', 'active', 'Mobile 10 GB', 'SIM card', '2024-08-12');

INSERT INTO bills (id, number, accounts_receivable_id, period, issued_on, due_date, total_amount, total_amount_to_be_paid, currency) VALUES
    (1, 'B-2024-0901', 2, '2024-09', '2024-10-01', '2024-10-21', 59.10, 118.20, 'EUR'),
    (2, 'B-2024-0902', 4, '2024-09', '2024-10-01', '2024-10-21', 64.90, 64.90, 'EUR'),
    (3, 'B-2024-0903', 5, '2024-09', '2024-10-01', '2024-10-21', 95.00, 190.00, 'EUR');

INSERT INTO payments (id, number, accounts_receivable_id, amount, currency, posted_on, method) VALUES
    (1, 'P-5001', 1, 42.50, 'EUR', '2024-10-02', 'card'),
    (2, 'P-5002', 3, 20.00, 'EUR', '2024-10-03', 'cash'),
    (3, 'P-5003', 5, 60.00, 'EUR', '2024-10-04', 'bank transfer');

INSERT INTO service_requests (id, number, contact_ref, type, status, response_description, responded_by, response_date) VALUES
    (1, 'SR-7001', 'C-1002', 'Picture quality', 'responded', 'A technician will replace the signal amplifier on 10 October between 09:00 and 12:00.', 'Technical Department', '2024-10-05'),
    (2, 'SR-7002', 'C-1004', 'Billing enquiry', 'responded', 'The late fee has been credited to your account.', 'Billing Team', '2024-10-06')

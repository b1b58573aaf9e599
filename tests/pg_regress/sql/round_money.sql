-- Half-up rounding to ISO 4217 minor units.
SELECT amount, currency, billing.round_money(amount, currency) AS rounded, billing.currency_minor_units(currency) AS digits
FROM (VALUES (54.838709677, 'EUR'), (0.125, 'USD'), (-0.125, 'USD'), (0.124999, 'USD'), (7, 'USD'),
             (1234.5, 'JPY'), (1.2345, 'KWD'), (1.2344, 'BHD'), (0.00005, 'CLF')) v(amount, currency)
ORDER BY currency, amount;
SELECT billing.round_money(1, 'usd');
\echo :LAST_ERROR_SQLSTATE

-- dialogue: initial schema placeholder; the service issue fills it in
SELECT 1;

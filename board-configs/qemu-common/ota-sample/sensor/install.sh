#!/bin/sh
echo "sensor $GWE_VERSION installed in $(pwd)"

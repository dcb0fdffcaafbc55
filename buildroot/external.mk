include $(sort $(wildcard $(BR2_EXTERNAL_GWE_PATH)/package/*/*.mk))

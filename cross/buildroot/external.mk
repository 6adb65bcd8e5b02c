include $(sort $(wildcard $(BR2_EXTERNAL_LOCALPROXY_PATH)/package/*/*.mk))
